"""Reading the text that the detector found: crops, a CTC recognizer and decoding.

Importing this package loads no model; `Recognizer()` does (ONNX Runtime)."""
from .ctc import Charset, ctc_greedy_decode
from .recognizer import TEXT, TEXT_SCORE, Recognizer, default_rec_model_path
from .spec import RecSpec

__all__ = ["Charset", "ctc_greedy_decode", "Recognizer", "RecSpec", "TEXT", "TEXT_SCORE",
           "default_rec_model_path"]
