"""Wire formats: uploaded clips, stream frames and masks, RLE, NPZ and overlay video."""
