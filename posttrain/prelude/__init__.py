"""PRELUDE (learning a user's latent preferences from their edits) and CIPHER: the synthetic world, contexts,
edit cost, prompts, simulated user, context encoders, agents, the interaction loop and its evaluation."""
