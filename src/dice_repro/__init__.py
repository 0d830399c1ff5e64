"""dice_repro: data influence cascades (DICE) in decentralized learning, reproduced."""

__version__ = "0.1.0"
