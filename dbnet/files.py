"""File kinds that every part of dbrt (runtime sources, evaluation datasets, training folders)
reads alike."""

# still images OpenCV's imread decodes (the opencv-python wheels include WebP and TIFF)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
