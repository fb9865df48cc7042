output "vpc_id" {
  description = "ID of the VPC."
  value       = aws_vpc.this.id
}

output "vpc_cidr_block" {
  description = "IPv4 CIDR block of the VPC."
  value       = aws_vpc.this.cidr_block
}

output "public_subnet_ids" {
  description = "IDs of the public subnets, in the order of availability_zones."
  value       = aws_subnet.public[*].id
}

output "private_subnet_ids" {
  description = "IDs of the private subnets, in the order of availability_zones."
  value       = aws_subnet.private[*].id
}

output "nat_gateway_public_ips" {
  description = "Elastic IPs of the NAT gateways (the source addresses of outbound traffic)."
  value       = aws_eip.nat[*].public_ip
}

output "endpoint_security_group_id" {
  description = "ID of the security group attached to the interface VPC endpoints (allows 443 from the VPC CIDR)."
  value       = aws_security_group.endpoints.id
}

output "s3_endpoint_prefix_list_id" {
  description = "Prefix list ID of the S3 gateway endpoint, for security group egress rules to S3."
  value       = aws_vpc_endpoint.s3.prefix_list_id
}

output "flow_logs_log_group_name" {
  description = "Name of the CloudWatch log group receiving the VPC flow logs."
  value       = aws_cloudwatch_log_group.flow_logs.name
}
