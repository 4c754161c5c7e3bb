# Object Storage (S3-compatible): raw DICOM landing, the processed store (de-identified DICOM,
# tensors, Parquet, reports, Dagster compute logs) and MLflow artifacts. Versioned and
# encrypted at rest. Each workload gets its own S3 user whose policy names only the buckets it
# needs; their keys are outputs (sensitive) to copy into Vault, never into the repository.

locals {
  buckets = {
    raw       = "${var.name_prefix}-raw"
    processed = "${var.name_prefix}-processed"
    mlflow    = "${var.name_prefix}-mlflow"
  }

  # S3 actions by access level.
  s3_read  = ["s3:GetObject", "s3:ListBucket", "s3:GetBucketLocation"]
  s3_write = ["s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts", "s3:ListBucketMultipartUploads"]

  # Which bucket each workload may read (r) or read and write (rw).
  s3_grants = {
    pipeline = { raw = "r", processed = "rw" } # Dagster runs and steps, compute logs
    mlflow   = { mlflow = "rw" }               # the tracking server proxies every artifact
    serving  = { processed = "r" }             # the API reads the store (models come through MLflow)
  }
}

resource "ovh_cloud_project_storage" "bucket" {
  for_each = local.buckets

  service_name = var.project_id
  region_name  = var.storage_region
  name         = each.value
  hide_objects = true

  versioning = {
    status = "enabled"
  }
  encryption = {
    sse_algorithm = "AES256"
  }
}

resource "ovh_cloud_project_user" "s3" {
  for_each = local.s3_grants

  service_name = var.project_id
  description  = "${var.name_prefix}-${each.key} (S3)"
  role_names   = ["objectstore_operator"]
}

resource "ovh_cloud_project_user_s3_credential" "s3" {
  for_each = local.s3_grants

  service_name = var.project_id
  user_id      = ovh_cloud_project_user.s3[each.key].id
}

resource "ovh_cloud_project_user_s3_policy" "s3" {
  for_each = local.s3_grants

  service_name = var.project_id
  user_id      = ovh_cloud_project_user.s3[each.key].id
  policy = jsonencode({
    Statement = [
      for bucket, level in each.value : {
        Sid      = "${each.key}-${bucket}-${level}"
        Effect   = "Allow"
        Action   = level == "rw" ? concat(local.s3_read, local.s3_write) : local.s3_read
        Resource = ["arn:aws:s3:::${local.buckets[bucket]}", "arn:aws:s3:::${local.buckets[bucket]}/*"]
      }
    ]
  })
}
