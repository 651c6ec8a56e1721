set -o pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 3
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee $OUT/gpu.txt
python3 -c "import torch,diffusers,open_clip;print(torch.__version__,diffusers.__version__,open_clip.__version__)" | tee -a $OUT/gpu.txt
t0=$(date +%s)
python3 -m edsam ldm-build --architecture models/architectures/ldm-text2im-large-256 --seed 0 --out /tmp/ldm 2>&1 | tail -3 | tee $OUT/ldm_build.log
echo "ldm-build $(( $(date +%s) - t0 )) s" | tee -a $OUT/ldm_build.log
python3 benchmarks/augment_throughput.py --ldm /tmp/ldm --device cuda --precision fp16 --resolution 256 --images 128 --batch-size 32 --m 10 --steps 10 --paths batched --json $OUT/augment_batched.json 2>&1 | grep -v Warning | tail -4 | tee $OUT/augment.log
python3 benchmarks/augment_throughput.py --ldm /tmp/ldm --device cuda --precision fp16 --resolution 256 --images 4 --batch-size 4 --m 10 --steps 10 --json $OUT/augment_ratio.json 2>&1 | grep -v Warning | tail -4 | tee -a $OUT/augment.log
python3 benchmarks/augment_throughput.py --ldm /tmp/ldm --device cuda --precision fp16 --resolution 256 --images 128 --batch-size 32 --m 1 --steps 10 --paths batched --json $OUT/augment_m1.json 2>&1 | grep -v Warning | tail -2 | tee -a $OUT/augment.log
echo "augment done $(( $(date +%s) - t0 )) s"
timeout 300 python3 benchmarks/train_throughput.py --model ViT-B-16 --gpus 1 --batch-size 256 --image-size 128 --per-class 384 --epochs 2 --workers 4 --only "clip (real only)" "clip (real+synthetic)" ada advstyle slip --json $OUT/train.json 2>&1 | grep -E "samples/s|x$|Error|error" | tee $OUT/train.log
echo "all done $(( $(date +%s) - t0 )) s"
