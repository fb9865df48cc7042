# The state bucket is not in this configuration (it must exist before init):
#   terraform init -backend-config="bucket=<state bucket>" -backend-config="region=<region>"
# See terraform/README.md. Locking uses an S3 lock file, no DynamoDB table.
terraform {
  backend "s3" {
    key          = "courier-ingest/dev/terraform.tfstate"
    encrypt      = true
    use_lockfile = true
  }
}
