"""rnnkit.cntk: CNTK's names over rnnkit's pieces, so that CNTK programs run with only their import
lines changed."""
