// The demo's stand-in for DINOv2: DINOv2's architecture (DinoVisionTransformer, built from a
// --dino-model JSON config exactly as `reals align train` builds it) at a Fashion-MNIST size, trained
// as a supervised classifier (its normalized CLS token through one Linear layer) because the
// self-supervised DINOv2 weights cannot be downloaded here. The backbone is saved in torch-hub
// naming, so `--dino-model <json> --dino-ckpt <file>` reads it as it reads a real checkpoint.
import { join } from 'node:path';
import { mkdirSync, writeFileSync } from 'node:fs';
import * as torch from '../torch/index.js';
import type { Tensor } from '../torch/index.js';
import * as nn from '../nn/index.js';
import { saveSafetensors } from '../io/index.js';
import { DinoVisionTransformer, preprocessImages, resolveDinoConfig, type DinoV2Config } from '../models/dinov2.js';
import { trainSupervised, type SupervisedResult, type SupervisedRunOptions } from './supervised.js';

export interface TeacherOptions extends SupervisedRunOptions {
  /** Fields over dinov2_vits14's: imgSize 32 and a patch size that tiles it. */
  config: Partial<DinoV2Config>;
  /** The side images are resized to, as the alignment trainer feeds the teacher (--dino-input-size). */
  inputSize: number;
}

export interface TeacherResult extends SupervisedResult {
  /** The --dino-model JSON and the --dino-ckpt file (hub naming, safetensors). */
  configPath: string;
  checkpoint: string;
  params: number;
}

class TeacherClassifier extends nn.Module {
  constructor(readonly backbone: DinoVisionTransformer, readonly head: nn.Linear) {
    super();
    this.addModule('backbone', backbone);
    this.addModule('head', head);
  }
}

export async function trainTeacher(options: TeacherOptions): Promise<TeacherResult> {
  mkdirSync(options.dir, { recursive: true });
  const configPath = join(options.dir, 'dino-model.json');
  writeFileSync(configPath, `${JSON.stringify(options.config, null, 2)}\n`);
  torch.manualSeed(options.seed);
  const backbone = new DinoVisionTransformer(resolveDinoConfig(configPath));
  const model = new TeacherClassifier(backbone, new nn.Linear(backbone.config.embedDim, 10));
  const result = await trainSupervised({
    ...options, model, label: 'teacher',
    logits: (images: Tensor) => model.head.forward(backbone.forward(preprocessImages(images, options.inputSize))),
  });
  const checkpoint = join(options.dir, 'dino-teacher.safetensors');
  saveSafetensors(checkpoint, Object.fromEntries(backbone.stateDict()));
  const params = backbone.parameters().reduce((n, p) => n + p.numel(), 0);
  return { ...result, configPath, checkpoint, params };
}
