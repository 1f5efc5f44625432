"""Model tricking: adversarial examples (white-box, black-box, physical-world)."""
