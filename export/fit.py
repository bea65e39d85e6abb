"""Fitting the scorers from training features: the Pi's own code (:mod:`edgead.fit.scorers`),
so that export and teach fit the same model from the same features."""

from edgead.fit.scorers import PatchCoreFit, fit_padim, fit_patchcore, padim_channel_index  # noqa: F401
