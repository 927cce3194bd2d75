"""Pure recommendation models: no Kafka, no torch. numpy, onnxruntime and river only."""
