"""The notebook's conversation: the session the magics and the panel share (session.py), one turn that survives an
interrupt (turn.py), and the transcript's notes and exports (transcript.py)."""
