"""HTTP uploads: analysis of files and zipped studies, offline classify, reports."""
