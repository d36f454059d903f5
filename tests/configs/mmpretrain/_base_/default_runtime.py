default_scope = 'mmpretrain'
default_hooks = dict(param_scheduler=dict(type='ParamSchedulerHook'), logger=dict(type='LoggerHook', interval=100))
env_cfg = dict(cudnn_benchmark=False)
log_level = 'INFO'
load_from = None
resume = False
