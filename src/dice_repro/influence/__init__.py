"""Influence of training units: counterfactual ground truth (DICE-GT) and first-order estimates (DICE-E)."""
