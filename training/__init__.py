"""Training, evaluation and export of the fracture classifier that dicomnode serves.

The node never imports this package. This package imports `dicomnode.preprocess` (so that
training and serving see identical pixels), `dicomnode.classifier.create_model` (so that both
build the same network) and `dicomnode.card` (the model package format). See README.md.
"""
