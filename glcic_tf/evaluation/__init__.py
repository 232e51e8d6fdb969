"""Scoring completions: metrics, classical OpenCV baselines, held-out evaluation of a model and
the learning curve measured during training.

metrics (L1, PSNR, SSIM, intervals) and baselines (OpenCV inpainting, the 8-bit convention) are
shared by evaluate (loader: the model; report: report.json and its tables; contact_sheet) and
curve (scored during training).
"""
