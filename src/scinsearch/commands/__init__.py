"""Click commands, one module per stage; registered in scinsearch.cli."""
