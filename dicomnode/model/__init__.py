"""The model: package and card, classifier, inference runtimes, model cache."""
