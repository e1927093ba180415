import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as torch from '../../src/torch/index.js';
import type { Tensor } from '../../src/torch/index.js';
import {
  DINOHead, DINOLoss, IBOTPatchLoss, dinoCrossViewLosses, koleoLoss, maskWeights,
} from '../../src/models/dino-head.js';
import { assertClose, loadFixture } from '../helpers.js';

torch.setNumThreads(1);
const fx = loadFixture('train/teacher_losses.json');
const RTOL = 1e-5;

test('DINOHead: upstream keys, weight_g frozen at 1, and the forward and its gradient match PyTorch on fixed weights', () => {
  const head = new DINOHead(fx.head_config);
  assert.deepEqual([...head.stateDict()].map(([k, t]) => [k, t.shape]), [
    ['mlp.0.weight', [10, 6]], ['mlp.0.bias', [10]], ['mlp.2.weight', [10, 10]], ['mlp.2.bias', [10]],
    ['mlp.4.weight', [5, 10]], ['mlp.4.bias', [5]], ['last_layer.weight_v', [16, 5]], ['last_layer.weight_g', [16, 1]],
  ]);
  assert.equal(head.lastLayer.weightG.requiresGrad, false);
  assert.ok(head.lastLayer.weightG.eq(1).all().item());
  assert.ok(head.lastLayer.weightV.requiresGrad);
  head.loadStateDict(fx.head_state);
  const x = (fx.head_x as Tensor).clone().requiresGrad_();
  const y = head.forward(x);
  assertClose(y, fx.head_y, RTOL, 1e-7, 'head output');
  y.square().sum().backward();
  assertClose(x.grad!, fx.head_grad, RTOL, 1e-7, 'd/dx');
  const single = new DINOHead({ ...fx.head_config, nlayers: 1 });
  assert.deepEqual([...single.stateDict().keys()], ['mlp.weight', 'mlp.bias', 'last_layer.weight_v', 'last_layer.weight_g']);
});

test('DINO loss: centered, sharpened teacher softmax, crop pairs weighted as SSLMetaArch, center EMA and gradients match PyTorch', () => {
  const { nLocal, studentTemp, teacherTemp, momentum } = fx.dino;
  const loss = new DINOLoss(16, studentTemp, momentum);
  loss.center.copy_(fx.dino_center);
  const teacher = loss.softmaxCenterTeacher(fx.teacher_global, teacherTemp);
  assertClose(teacher, fx.teacher_soft, RTOL, 1e-8, 'teacher softmax');
  loss.updateCenter(fx.teacher_global);
  assertClose(loss.center, fx.dino_center_after, RTOL, 1e-8, 'center after the update');
  const local = (fx.student_local as Tensor).clone().requiresGrad_();
  const global = (fx.student_global as Tensor).clone().requiresGrad_();
  const terms = dinoCrossViewLosses(loss, local, global, teacher, nLocal);
  assertClose(terms.dinoLocal, fx.dino_local, RTOL, 0, 'local-crop loss');
  assertClose(terms.dinoGlobal, fx.dino_global, RTOL, 0, 'global-crop loss');
  terms.dinoLocal.add(terms.dinoGlobal).backward();
  assertClose(local.grad!, fx.local_grad, RTOL, 1e-8, 'd/d student local');
  assertClose(global.grad!, fx.global_grad, RTOL, 1e-8, 'd/d student global');
});

test('DINO loss of uniform predictions against any teacher is log K per pair, so the pair-weighted total is log K', () => {
  const loss = new DINOLoss(16);
  const teacher = loss.softmaxCenterTeacher(torch.randn([6, 16]), 0.04);
  const terms = dinoCrossViewLosses(loss, torch.zeros([6, 16]), torch.zeros([6, 16]), teacher, 2);
  assert.ok(Math.abs(terms.dinoLocal.add(terms.dinoGlobal).item() - fx.dino.logK) < 1e-5);
});

test('iBOT loss: per-image mask weights, masked-token cross-entropy, center EMA and gradient match PyTorch', () => {
  const { studentTemp, teacherTemp, momentum } = fx.dino;
  const loss = new IBOTPatchLoss(16, studentTemp, momentum);
  loss.center.copy_(fx.ibot_center);
  const teacher = loss.softmaxCenterTeacher(fx.teacher_masked, teacherTemp);
  assertClose(teacher, fx.ibot_teacher_soft, RTOL, 1e-8, 'teacher softmax');
  loss.updateCenter(fx.teacher_masked);
  assertClose(loss.center, fx.ibot_center_after, RTOL, 1e-8, 'center after the update');
  assertClose(maskWeights(fx.masks), fx.masks_weight, 0, 0, 'mask weights');
  const student = (fx.student_masked as Tensor).clone().requiresGrad_();
  const value = loss.forwardMasked(student, teacher, fx.masks);
  assertClose(value, fx.ibot_loss, RTOL, 0, 'iBOT loss');
  value.backward();
  assertClose(student.grad!, fx.ibot_grad, RTOL, 1e-8, 'd/d student');
});

test('KoLeo: -mean log distance to the nearest other normalized row, and its gradient, match PyTorch', () => {
  const x = (fx.koleo_x as Tensor).clone().requiresGrad_();
  const value = koleoLoss(x);
  assertClose(value, fx.koleo, RTOL, 0, 'KoLeo');
  value.backward();
  assertClose(x.grad!, fx.koleo_grad, RTOL, 1e-8, 'd/dx');
});
