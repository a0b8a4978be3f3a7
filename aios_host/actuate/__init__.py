"""Apply a Plan in its order, journal originals first, undo on failure, roll back on request."""
