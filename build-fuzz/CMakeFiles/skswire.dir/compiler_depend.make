# Empty compiler generated dependencies file for skswire.
# This may be replaced when dependencies are built.
