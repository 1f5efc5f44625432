"""Text subjects: the built-in corpus and the character-window encoding the character LM trains on."""
