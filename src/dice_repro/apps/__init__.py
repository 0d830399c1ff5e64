"""The paper's three uses of DICE, measured: malicious-neighbour detection (``anomaly``), collaborator
selection and reciprocity (``collaborators``), and contribution shares (``contribution``)."""
