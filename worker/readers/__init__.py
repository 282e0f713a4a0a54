"""Reading device files (CSV, JSON Lines, JSON) into CreateOptions, row by row, streaming."""
