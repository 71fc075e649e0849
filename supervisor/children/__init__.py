"""Child processes that run jobs, and the pool the supervisor keeps of them."""
