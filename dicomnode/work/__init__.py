"""Doing the work: the pipeline of one job and one study report, the worker loops."""
