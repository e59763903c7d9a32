"""DB training on synthetic scenes or ICDAR2015-format folders (torch needed only by the loop)."""
