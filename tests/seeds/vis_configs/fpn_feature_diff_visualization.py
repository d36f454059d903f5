# An mmrazor feature-difference visualisation config: the same neck levels of both models.
recorders1 = dict(neck=dict(_scope_='mmrazor', type='ModuleOutputs', source='neck'))
mappings1 = dict(
    p3=dict(recorder='neck', data_idx=0),
    p4=dict(recorder='neck', data_idx=1),
    p5=dict(recorder='neck', data_idx=2),
    p6=dict(recorder='neck', data_idx=3))
recorders2 = recorders1
mappings2 = mappings1
