import ldmdetect.io


def test_public_names_are_re_exported():
    expected = {
        "load_image",
        "ImageDecodeError",
        "IMAGE_EXTENSIONS",
        "DEFAULT_MAX_PIXELS",
        "pil_to_tensor",
        "tensor_to_pil",
        "save_png",
        "ensure_min_size",
        "center_box",
        "random_boxes",
        "grid_boxes",
        "crop_boxes",
        "n_try_boxes",
        "crop",
        "group_by_size",
        "parse_perturbation",
        "parse_perturbations",
        "Perturbation",
        "PERTURBATIONS",
        "find_images",
        "read_manifest",
        "resolve_sources",
        "sample_photos",
        "write_sample_photos",
        "fetch_photos",
        "photo_source",
        "photo_sources",
        "shipped_photo_crops",
    }
    assert expected <= set(ldmdetect.io.__all__)
    assert all(hasattr(ldmdetect.io, name) for name in ldmdetect.io.__all__)
