"""The data owner's side: local training, policy, ledger, the round pipeline and the runtime."""
