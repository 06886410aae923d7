"""Assets by domain: data (manifest, crops), teacher (labels, table), students, benchmarks."""
