"""PyTorch models: two-tower multimodal recall (`recall`) and MMoE ranking with GMF (`ranking`)."""
