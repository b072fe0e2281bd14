"""Byte-level data: corpora and their splits (`corpus`), batches (`batches`) and the built-in
synthetic tasks with known token classes (`recall`)."""
