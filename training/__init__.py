"""Training, evaluation and export of the fracture classifier that dicomnode serves.

The node never imports this package. This package imports `dicomnode.imaging.preprocess` (so that
training and serving see identical pixels), `dicomnode.model.classifier.create_model` (so that both
build the same network) and `dicomnode.model.card` (the model package format). See README.md.
"""
