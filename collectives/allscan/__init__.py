"""All-Scan (exclusive prefix or suffix under an associative op): the entry call, its algorithms, its
combine ops and its block layout."""
