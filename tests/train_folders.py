"""Small training-data folders of both real-data kinds for the training tests."""
import cv2
import numpy as np


def icdar_folder(root, suffix=".jpg"):
    """Two ICDAR 2015 images (img_N + gt_img_N.txt): one word and one "do not care" box each."""
    root.mkdir()
    for i in (1, 2):
        img = np.full((120, 160, 3), 200, np.uint8)
        cv2.putText(img, "TEXT", (20, 70), cv2.FONT_HERSHEY_SIMPLEX, 1.2, (0, 0, 0), 3)
        cv2.imwrite(str(root / f"img_{i}{suffix}"), img)
        (root / f"gt_img_{i}.txt").write_text(
            "\ufeff18,40,110,40,110,78,18,78,TEXT\n5,5,15,5,15,15,5,15,###\n", encoding="utf-8")
    return root


def mask_folder(root, n=3):
    """`n` photos with their shrunk-text masks (img_N.jpg + img_N_mask.png), as the mask set has."""
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        image = np.full((120, 160, 3), 200, np.uint8)
        cv2.putText(image, "SHOP", (20, 70), cv2.FONT_HERSHEY_SIMPLEX, 1.5, (20, 20, 20), 4)
        mask = np.zeros((120, 160), np.uint8)
        mask[50:64, 28:120] = 255
        cv2.imwrite(str(root / f"img_{i}.jpg"), image)
        cv2.imwrite(str(root / f"img_{i}_mask.png"), mask)
    return root
