"""`edgeside report`: content analytics from the decision log."""
