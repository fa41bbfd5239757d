"""The collectives' α-β predictions, the calibration that measures their terms, and the memo ``auto`` consults."""
