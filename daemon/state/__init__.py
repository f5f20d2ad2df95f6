"""State: rolling stacks and skymatch groups, kept durable in the state folder."""
