"""`distinit prepare`: archives, dataset layouts, split files and formats."""
