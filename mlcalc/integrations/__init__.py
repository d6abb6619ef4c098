"""Other engines and formats: mlcalc models where users go when they outgrow one
process (TorchSim for many structures at once; see :mod:`mlcalc.integrations.torchsim`),
and SchNetPack models brought into mlcalc (:mod:`mlcalc.integrations.schnetpack`).

Each integration is an optional extra and imports its engine only when used.
"""
