"""The baseline for bench_serving.py: the same model behind a bare FastAPI endpoint that accepts the
same OIP v2 body and returns probabilities, with no guards and no validation beyond parsing."""
import sys

import numpy as np
import torch
import uvicorn
from fastapi import FastAPI, Request

from mlwarden.core.zoo import mlp

torch.set_num_threads(1)
model = mlp((1, 8, 8), 10)
model.load_state_dict(torch.load(sys.argv[1], weights_only=True))
model.eval()
app = FastAPI()


@app.post("/v2/models/model/infer")
async def infer(request: Request):
    body = await request.json()
    inp = body["inputs"][0]
    x = torch.tensor(np.asarray(inp["data"], dtype=np.float32).reshape(inp["shape"]))
    with torch.no_grad():
        p = model(x).softmax(1).numpy()
    return {"model_name": "model", "outputs": [{"name": "probabilities", "shape": list(p.shape), "datatype": "FP32",
                                               "data": p.reshape(-1).tolist()}]}


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
