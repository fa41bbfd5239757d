"""The collectives' α-β predictions and ``auto_choice`` per family, the calibration that measures
their terms into the runtime's cost table, and the memo ``auto`` consults."""
