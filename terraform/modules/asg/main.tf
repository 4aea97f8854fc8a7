# scale-api on an autoscaling group: every instance boots Debian, cloud-init writes the same systemd
# units scalectl installs on app hosts (plus the node exporter and the log shipper), and the group
# scales on average CPU (target tracking at cpu_scale_out, or step: out above cpu_scale_out, in below
# cpu_scale_in) behind an application load balancer that health-checks the readiness path.

locals {
  instance_count = var.instances == "max" ? "$(nproc)" : var.instances
  user_data = <<-CLOUDINIT
    #cloud-config
    package_update: true
    packages: [prometheus-node-exporter, rsyslog, rsyslog-relp, curl]
    write_files:
      - path: /etc/systemd/system/scale-api@.service
        permissions: "0644"
        encoding: b64
        content: ${base64encode(var.unit_file)}
      - path: /etc/systemd/system/scale-api@.socket
        permissions: "0644"
        encoding: b64
        content: ${base64encode(var.socket_file)}
      - path: /etc/scale-api/scale-api.env
        permissions: "0640"
        encoding: b64
        content: ${base64encode(var.env_file)}
      - path: /etc/rsyslog.d/60-scalectl-ship.conf
        permissions: "0644"
        encoding: b64
        content: ${base64encode(var.log_ship_file)}
    runcmd:
      - mkdir -p /opt/scale-api/releases/boot
      - [sh, -c, "test -z '${var.release_url}' || curl -fsSL '${var.release_url}' -o /opt/scale-api/releases/boot/scale-api"]
      - chmod 0755 /opt/scale-api/releases/boot/scale-api
      - ln -sfn /opt/scale-api/releases/boot /opt/scale-api/current
      - systemctl daemon-reload
      - systemctl restart rsyslog
      - [sh, -c, "for i in $(seq 0 $((${local.instance_count} - 1))); do p=$((${var.app_port} + i)); systemctl enable --now scale-api@$p.socket scale-api@$p.service; done"]
  CLOUDINIT
}

resource "aws_security_group" "lb" {
  name_prefix = "${var.name}-lb-"
  description = "HTTP into the load balancer"
  vpc_id      = var.vpc_id

  ingress {
    description = "HTTP from anywhere"
    from_port   = 80
    to_port     = 80
    protocol    = "tcp"
    cidr_blocks = ["0.0.0.0/0"]
  }

  egress {
    description = "To the app instances"
    from_port   = var.app_port
    to_port     = var.app_port + 255
    protocol    = "tcp"
    cidr_blocks = ["0.0.0.0/0"]
  }
}

resource "aws_security_group" "app" {
  name_prefix = "${var.name}-app-"
  description = "scale-api instances, reachable from the load balancer only"
  vpc_id      = var.vpc_id

  ingress {
    description     = "scale-api from the load balancer"
    from_port       = var.app_port
    to_port         = var.app_port + 255
    protocol        = "tcp"
    security_groups = [aws_security_group.lb.id]
  }

  egress {
    description = "Package mirrors, Redis, log collector"
    from_port   = 0
    to_port     = 0
    protocol    = "-1"
    cidr_blocks = ["0.0.0.0/0"]
  }
}

resource "aws_launch_template" "this" {
  name_prefix   = "${var.name}-"
  image_id      = var.ami
  instance_type = var.instance_type
  user_data     = base64encode(local.user_data)

  vpc_security_group_ids = [aws_security_group.app.id]

  metadata_options {
    http_tokens   = "required"
    http_endpoint = "enabled"
  }

  monitoring {
    enabled = true
  }

  tag_specifications {
    resource_type = "instance"
    tags = {
      Name              = "${var.name}-app"
      "scalectl:topology" = var.name
    }
  }
}

resource "aws_lb" "this" {
  name                       = substr("${var.name}-lb", 0, 32)
  load_balancer_type         = "application"
  subnets                    = var.subnets
  security_groups            = [aws_security_group.lb.id]
  drop_invalid_header_fields = true
}

resource "aws_lb_target_group" "app" {
  name_prefix = "sa-"
  port        = var.app_port
  protocol    = "HTTP"
  vpc_id      = var.vpc_id

  health_check {
    path                = var.readiness_path
    matcher             = "200"
    interval            = 10
    healthy_threshold   = 2
    unhealthy_threshold = 3
  }

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_lb_listener" "http" {
  load_balancer_arn = aws_lb.this.arn
  port              = 80
  protocol          = "HTTP"

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.app.arn
  }
}

resource "aws_autoscaling_group" "this" {
  name_prefix               = "${var.name}-"
  min_size                  = var.min_size
  max_size                  = var.max_size
  desired_capacity          = var.desired_capacity
  vpc_zone_identifier       = var.subnets
  target_group_arns         = [aws_lb_target_group.app.arn]
  health_check_type         = "ELB"
  health_check_grace_period = var.health_check_grace_period

  launch_template {
    id      = aws_launch_template.this.id
    version = aws_launch_template.this.latest_version
  }

  instance_refresh {
    strategy = "Rolling"
    preferences {
      min_healthy_percentage = var.min_healthy_percentage
    }
  }

  tag {
    key                 = "scalectl:topology"
    value               = var.name
    propagate_at_launch = true
  }
}

# Target tracking (default): AWS adds instances while average CPU is above cpu_scale_out and removes
# them when it stays well below (AWS picks the scale-in margin; cpu_scale_in is not used).
resource "aws_autoscaling_policy" "cpu_target" {
  count                     = var.scaling_policy == "target_tracking" ? 1 : 0
  name                      = "${var.name}-cpu-target"
  autoscaling_group_name    = aws_autoscaling_group.this.name
  policy_type               = "TargetTrackingScaling"
  estimated_instance_warmup = var.health_check_grace_period

  target_tracking_configuration {
    predefined_metric_specification {
      predefined_metric_type = "ASGAverageCPUUtilization"
    }
    target_value     = var.cpu_scale_out
    disable_scale_in = false
  }
}

# Step (the seeds' two thresholds exactly): one more instance when average CPU stays above
# cpu_scale_out, one fewer when it stays below cpu_scale_in.
resource "aws_autoscaling_policy" "out" {
  count                  = var.scaling_policy == "step" ? 1 : 0
  name                   = "${var.name}-cpu-out"
  autoscaling_group_name = aws_autoscaling_group.this.name
  adjustment_type        = "ChangeInCapacity"
  scaling_adjustment     = 1
  cooldown               = var.scale_out_cooldown
}

resource "aws_cloudwatch_metric_alarm" "cpu_high" {
  count               = var.scaling_policy == "step" ? 1 : 0
  alarm_name          = "${var.name}-cpu-high"
  namespace           = "AWS/EC2"
  metric_name         = "CPUUtilization"
  statistic           = "Average"
  period              = 60
  evaluation_periods  = 3
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.cpu_scale_out
  alarm_actions       = [aws_autoscaling_policy.out[0].arn]
  dimensions = {
    AutoScalingGroupName = aws_autoscaling_group.this.name
  }
}

resource "aws_autoscaling_policy" "in" {
  count                  = var.scaling_policy == "step" ? 1 : 0
  name                   = "${var.name}-cpu-in"
  autoscaling_group_name = aws_autoscaling_group.this.name
  adjustment_type        = "ChangeInCapacity"
  scaling_adjustment     = -1
  cooldown               = var.scale_in_cooldown
}

resource "aws_cloudwatch_metric_alarm" "cpu_low" {
  count               = var.scaling_policy == "step" ? 1 : 0
  alarm_name          = "${var.name}-cpu-low"
  namespace           = "AWS/EC2"
  metric_name         = "CPUUtilization"
  statistic           = "Average"
  period              = 60
  evaluation_periods  = 10
  comparison_operator = "LessThanThreshold"
  threshold           = var.cpu_scale_in
  alarm_actions       = [aws_autoscaling_policy.in[0].arn]
  dimensions = {
    AutoScalingGroupName = aws_autoscaling_group.this.name
  }
}
