"""Second front ends over unmask's core: ``unmask.integrations.trl`` (TRL's ``GRPOTrainer``).

Nothing is imported here, so ``import unmask`` never pulls in TRL.
"""
