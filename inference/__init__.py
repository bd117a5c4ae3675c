"""J-Quants data, leak-free features, stock graph, ATFT-GAT-FAN model, training, serving."""
