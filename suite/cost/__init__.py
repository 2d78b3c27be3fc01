"""What a model costs, measured the same way for every method: multiply-adds, tokens,
parameters, memory, throughput, and the machine's matmul peak they are set against."""
