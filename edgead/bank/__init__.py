"""The PatchCore memory bank as an artifact stores it: int8 codes, bank files, hnswlib index files."""
