"""File I/O: FITS reading and writing, products, quarantine, safe file names."""
