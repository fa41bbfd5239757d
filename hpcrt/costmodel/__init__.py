"""The α-β cost model's link measurements, taken in the job they serve."""
