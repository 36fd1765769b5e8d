"""Qt widgets of the CryoSeg dock (the only Qt code in the package; kept thin)."""
