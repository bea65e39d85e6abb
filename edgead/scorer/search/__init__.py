"""Nearest-neighbour search over a PatchCore memory bank: one backend a file, chosen by ``registry``."""
