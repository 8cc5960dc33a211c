"""Importers for the real on-disk layouts of each training source; importing registers them."""

from training.importers import folder, hvliver, ircadb, lits, msd, synthetic, totalseg

__all__ = ["folder", "hvliver", "ircadb", "lits", "msd", "synthetic", "totalseg"]
