"""Other engines and formats: mlcalc models where users go when they outgrow one
process (TorchSim for many structures at once; see :mod:`mlcalc.integrations.torchsim`).

Each integration is an optional extra and imports its engine only when used.
"""
